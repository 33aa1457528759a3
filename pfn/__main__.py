import sys

from pfn.cli import main

sys.exit(main())
