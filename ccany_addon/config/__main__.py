import sys

from ccany_addon.config.cli import main

sys.exit(main())
