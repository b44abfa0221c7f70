"""``python -m dk_emulators.kingdee``."""

from dk_emulators.kingdee.cli import main

main()
