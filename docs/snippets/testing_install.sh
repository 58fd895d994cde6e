pip install pytest pytest-trio
