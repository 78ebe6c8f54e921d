"""Online serving: :mod:`.server` (one pipeline's model holder following the aliases, its
traffic policy, a request's checks, features and answer), :mod:`.policy` (which arm answers
a request), :mod:`.requestlog` (every answered request to ``served/``, batched off the
request path), :mod:`.canary` (the canary's steps and their always-valid test) and
:mod:`.app` (the HTTP face: ``python -m mlpipe.serving``)."""
