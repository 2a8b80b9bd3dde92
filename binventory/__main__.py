import sys

from binventory.cli import main

sys.exit(main())
