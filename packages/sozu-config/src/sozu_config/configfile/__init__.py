"""Reading sōzu's ``config.toml``; the public face is :mod:`sozu_config.config`.

* :mod:`.models` — the tables as written (one pydantic model per kind of table);
* :mod:`.settings` — :class:`~.settings.Config`, the global settings and the state;
* :mod:`.tables` — each table read with its model and turned into state requests;
* :mod:`.rules` — what no single table can check, and the state built from the requests;
* :mod:`.named_files` — the certificates, keys and answer templates the file names;
* :mod:`.errors` — errors and warnings located by file, table and key;
* :mod:`.loader` — the entry points.
"""
