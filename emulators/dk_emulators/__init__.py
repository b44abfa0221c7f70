"""Local HTTP emulators of the DingTalk approval API and the Kingdee K/3Cloud WebAPI.

Used by the demo, the tests and the benchmarks; product code never imports this package.
"""
