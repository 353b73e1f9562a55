"""`kws serve`: a web console for a headless device (issue 40).

One process runs the same listener as `kws listen` (:mod:`bnnkws.app.listener`) in a thread and
serves a page that shows its hops and detections live (server-sent events) and enrols, forgets
and re-thresholds words through :mod:`bnnkws.deploy.enroll`, the functions `kws enroll`,
`kws forget` and `kws words` call. After a change the bundle is swapped atomically and the
running listener carries on with the new one without losing audio.

* ``events``: the hub between the listener thread and the page (last minute of hops, recent
  detections, cost per hop), fanned out to every connected page.
* ``live``: the listener thread: the source, the streaming detector, bundle reloads.
* ``takes``: uploaded takes: size limit, decoding with the project's audio reader, waveform and
  what the model heard in each.
* ``auth``: the change token (printed at start-up or read from ``--token-file``).
* ``server``: the aiohttp application (routes) and its start-up.
* ``static/``: the page, plain HTML, JavaScript and CSS (no CDN, no build step).

aiohttp is the optional ``serve`` extra (``pip install 'bnn-kws[serve]'``); only the command
(:mod:`bnnkws.app.commands.serve`) imports this package, when it runs.
"""
