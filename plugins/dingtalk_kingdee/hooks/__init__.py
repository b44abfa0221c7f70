"""One hook per external system; each speaks its own API and knows nothing of schemes."""
