"""Cancellation: calls whose caller gave up stop, on every worker of the service.

Three small parts, each in the layer that needs it (tests/unit/test_architecture.py):

* ``token``: ``CancelToken``, one call's cancelled flag and what to do when it flips
  (cancel an asyncio task, the call's own nested calls); ``run_cancellable`` for ``async
  def`` handlers.
* ``wire``: the cancel message (build, parse, validate) and ``CancelledIds``, the bounded
  set of cancelled correlation ids a worker keeps until each call's deadline.
* ``worker``: ``CancelListener``, the container's consumer of cancels (one exclusive
  queue per worker process, bound to the control exchange).

The caller's side lives in ``calls.Caller`` (it sends a cancel when a call times out or its
``RpcFuture`` is cancelled). docs/protocol.md ("Cancellation") is the wire contract.
"""
