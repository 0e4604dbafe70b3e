"""Risk model: absorbing Markov chain over tracked states, fitted from trajectory logs.

Pure core (numpy + stdlib). Public API::

    from guard.risk import RiskModel, load_risk_model, default_model_path
"""

from guard.risk.model import ModelMeta, RiskModel, default_model_path, load_risk_model

__all__ = ["ModelMeta", "RiskModel", "default_model_path", "load_risk_model"]
