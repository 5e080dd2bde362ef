"""cxrl: report-to-chest-X-ray generation tuned with policy-gradient RL and comparative feedback."""

__version__ = "0.1.0"
