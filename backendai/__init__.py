"""Backend AI control plane: code shared by the manager, hub, agent and aictl.

`backendai.v1` holds the stubs generated from proto/ (never edited by hand).
"""

__version__ = "0.1.0"
