import sys

from gofannon.cli import main

sys.exit(main())
