import sys

from dingtalk_kingdee.valuemaps.cli import main

sys.exit(main())
