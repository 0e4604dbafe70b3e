"""Training side of the risk model: trajectories in, a fitted artifact and reports out.

``fit`` (walks -> scorers -> bins -> counts -> threshold -> report, one module per stage: ``fit``,
``scorer_fit``, ``bins``, ``chain_fit``, ``threshold``, ``fit_report``), ``evaluate``, ``depth``,
``augment`` and the ``guard fit/eval/depth/augment`` commands. Serving (``guard.risk``) never
imports this package.
"""
