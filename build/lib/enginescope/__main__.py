import sys

from enginescope.cli import main

sys.exit(main())
