"""Value maps built from the two systems, not typed by hand (docs/schemes.md, "Value maps from the two
systems").

``model`` (records, rows, statuses), ``matching`` (pure pairing by evidence), ``options`` (expense-item
keys from stored claims, pure), ``sources`` (DingTalk contacts and Kingdee base data through the hooks),
``proposal`` (the proposal file beside a map, and apply), ``suggest`` (one run over a scheme's maps),
``run`` (wired to the scheme's connections and staging), ``cli`` (``python -m
dingtalk_kingdee.valuemaps suggest``) and ``dag`` (the manually triggered value-map DAG).
"""
