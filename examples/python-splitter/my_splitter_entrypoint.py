import sys

from aios_model_splitter.executor import execute_model_splitter
from my_splitter_code.splitter_container import MyCustomModelSplitter

if __name__ == "__main__":
    # execute_model_splitter returns the task's outcome as an exit code: 0 complete, 1 failed
    sys.exit(execute_model_splitter(MyCustomModelSplitter))
