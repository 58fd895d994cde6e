# docs/tutorial.rst: the commands of each step, run from the checkout's root.
# [step1]
peregrine-rt examples.tutorial.step1:Chat
# [/step1]
# [say]
python examples/tutorial/say.py hello
# [/say]
# [step2]
peregrine-rt examples.tutorial.step2:Chat
# [/step2]
# [step3]
peregrine-rt examples.tutorial.step3:Chat
python examples/tutorial/say.py hello --nick ada
# [/step3]
# [step4]
peregrine-rt examples.tutorial.step4:Chat
# [/step4]
# [step5]
peregrine-rt examples.tutorial.step5:Chat
# [/step5]
# [step6]
peregrine-rt examples.tutorial.step6:Chat
# [/step6]
# [step7]
peregrine-rt examples.chat.app:Chat --port 8001 --redis redis://127.0.0.1:6379
peregrine-rt examples.chat.app:Chat --port 8002 --redis redis://127.0.0.1:6379
# [/step7]
