"""The studio: the page a visitor uses, in layers that only import downwards.

- :mod:`.service` (with :mod:`.catalog`, :mod:`.decoding`, :mod:`.inputs`): sessions, runs, models
  and limits, plain values in and out; no Gradio.
- :mod:`.screens`: what the page shows of a run, as plain data; no Gradio.
- :mod:`.handlers`: a Gradio request in, the service called, screens out.
- :mod:`.page`: the panels, from plain configuration; imports neither handlers nor service.
- :mod:`.wiring`: the one module that imports page and handlers; the endpoint table.
"""
