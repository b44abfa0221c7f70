"""``python -m dingtalk_kingdee.valuemaps suggest --scheme ...`` (see ``cli``)."""

import sys

from dingtalk_kingdee.valuemaps.cli import main

# Run only as ``-m dingtalk_kingdee.valuemaps``: Airflow's plugin manager, should it ever walk this
# folder without plugins/.airflowignore, imports this file as a module named "__main__" too.
if __name__ == "__main__" and __spec__ is not None and __spec__.name == "dingtalk_kingdee.valuemaps.__main__":
    sys.exit(main())
