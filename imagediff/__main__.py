import sys

from imagediff.cli import main

sys.exit(main())
