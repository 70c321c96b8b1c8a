import sys

from localdev.chaos import main

sys.exit(main())
