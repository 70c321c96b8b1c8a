"""The project's side-by-side benchmark: the same deletions through an ideal client, the
azure-mgmt-scvmm SDK (sync and aio), the app in the local host, and the local host driving a
no-op app, against the local ARM emulator. ``python -m localdev.bench --help`` (or
``scripts/bench``); what is measured and how is written out in ``docs/benchmark.md``.

Modules, one job each: :mod:`.plan` (the workload and the emulator's script), :mod:`.child`
(a contender's own process), :mod:`.clients` (ideal and SDK contenders), :mod:`.hosted` (the app
and the no-op app in the local host), :mod:`.noop_app`, :mod:`.runner` (the parent: stand-ins,
one child per contender, rusage), :mod:`.children` (a child process from the parent's side),
:mod:`.hosting` (the hosted contenders from the parent's side, the app as K processes),
:mod:`.feed` (the hosted contenders' queues), :mod:`.measure`
(figures from the emulator's records), :mod:`.report` (the table and the JSON), :mod:`.chart`
(the PNG), :mod:`.profile` (py-spy samples of a contender, on request). Apart from the side by
side: :mod:`.inflight` (N operations in flight and one poller: its memory and rate), with
:mod:`.inflight_child` (the app's side) and :mod:`.inflight_report` (its figures).
"""
