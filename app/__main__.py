import sys

from bnnkws.app.cli import main

sys.exit(main())
