"""``python -m dk_emulators.dingtalk``."""

from dk_emulators.dingtalk.cli import main

main()
