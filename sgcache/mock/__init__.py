"""A mock ShotGrid site: the reference every cached answer is compared with.

Run it::

    sgcache mock --host 127.0.0.1 --port 8020 [--schema FILE] [--demo SIZE] [--seed N]
                 [--state FILE] [--api-user NAME:KEY[:noevents]]... [--human-user LOGIN:PASSWORD]...
                 [--admin-port N]
                 [--latency S] [--error-rate R] [--drop-rate R] [--outage S]
                 [--event-delay S] [--event-delay-rate R] [--event-gap-rate R] [--fault-seed N]

Once its sockets are bound it prints one line (and flushes)::

    sgcache-mock: url=http://127.0.0.1:8020 script_name=NAME script_key=KEY admin=http://127.0.0.1:PORT

* **Schema**: the built-in studio schema (``builtin_schema.build_schema``) unless
  ``--schema`` names a ``{"schema_read": ..., "schema_entity_read": ...}`` JSON file
  such as a dump of a real site.
* **Data**: empty, or ``--demo SIZE`` entities from ``demo.generate(SIZE, seed)``
  (loaded without events); the printed script is then the demo's own ApiUser.
  Otherwise the site creates one script (``sgcache_mock``) with a random key.
* **State**: with ``--state FILE`` the site is loaded from FILE when it exists and
  saved there on shutdown (SIGTERM/SIGINT; skipped if nothing changed) and on
  ``POST /save``, so a 1,000,000-entity demo is generated once.
* **Accounts**: ``--api-user NAME:KEY`` adds a script (``:noevents`` turns its event
  generation off); HumanUsers log in with ``login`` + ``password_proxy`` (``--human-user
  LOGIN:PASSWORD`` creates one or sets its password, e.g. for demo users); sessions
  come from ``get_session_token``; scripts may ``sudo_as_login`` active HumanUsers.

The public port speaks api3: ``POST /api3/json`` (also under a base path),
``/upload/upload_file``, ``/upload/publish_thumbnail``, ``/upload/share_thumbnail``,
the direct-to-storage endpoints (``/upload/api_get_upload_link_info``,
``…_for_part``, ``…complete_multipart_upload``, ``/upload/api_link_file``) and the
storage they point at (``PUT /storage/<id>``), ``/upload/get_thumbnail_url``,
``/file_serve/attachment/<id>``,
``/thumbnail/<id>`` and the pending-thumbnail image under ``/images/status/transient/``.
Every method of the ``shotgun_api3`` client is answered or refused with the site's error
(docs/api3-methods.md). The admin port listens on 127.0.0.1 only:

=====================  ===============================================================
``GET /faults``        current fault settings
``POST /faults``       set any of ``latency`` (s), ``error_rate``, ``error_codes``,
                       ``drop_rate``, ``outage`` (s from now), ``event_delay`` (s),
                       ``event_delay_rate``, ``event_gap_rate``, ``seed``; ``reset: true``
                       clears everything first. Bad settings answer 400.
``GET /stats``         ``{"requests": {method: n}, "total", "injected", "since"}``: every
                       request that reached the public port, by RPC ``method_name``
                       (``upload:<endpoint>``, ``download``, ``invalid`` otherwise)
``POST /stats/reset``  zero the counters
``POST /save``         write the ``--state`` file now
``GET /settings``      site behaviour switched at run time: ``thumbnail_delay`` (s a new
                       thumbnail stays pending; 0), ``s3_direct_uploads_enabled`` (false)
``POST /settings``     and ``s3_enabled_upload_types`` (as ``info`` reports them)
``GET /health``        ``{"ok": true}``
=====================  ===============================================================

Module map: ``store`` (records, retired flags, ids, undo journal), ``query``
(filter/sort/page/render in Python — semantics documented there), ``filters``, ``grouping``
and ``names`` (the mock's own reading of filters and deep paths, summary groups and link
names: nothing of the cache's), ``writes``
(create/update/delete/revive/batch with inverse links), ``events`` (EventLogEntry
rows, out-of-order commits), ``summarize``, ``schema_ops``, ``auth``, ``presets``
(``additional_filter_presets``), ``notes`` (note threads), ``activity`` (activity
streams), ``search`` (text search), ``follows``, ``schedule`` (work schedule),
``preferences`` (preferences, subscriptions, last access; refusals), ``thumbnails``
(image fields, pending state, sharing), ``uploads`` (attachments, direct-to-storage),
``site`` (the RPC dispatcher), ``server`` (HTTP), ``faults``, ``state``, ``runner``; its command line is `sgcache/cli/mock.py`. It imports only the wire
(`sgcache.protocol`) and the schema model, never the cache (tests/test_layers.py).
Tests start it as a process with ``tests.support.procs.start_mock``.
"""
