"""``python -m sgdr.data [train.py flags]``: fetch the data set that train.py with these flags reads, once."""

import sys

from sgdr.data.cifar import main

if __name__ == "__main__":
    sys.exit(main())
