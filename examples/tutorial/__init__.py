"""The tutorial's chat (docs/tutorial.rst), one complete file per step.

``peregrine-rt examples.tutorial.step1:Chat`` ... ``step6:Chat``; step 7 is
the real chat, ``examples/chat/``.  ``say.py`` tries a step from Python.
"""
