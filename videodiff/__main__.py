import sys

from videodiff.cli import main

sys.exit(main())
