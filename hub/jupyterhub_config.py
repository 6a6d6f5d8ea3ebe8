# JupyterHub configuration for the secure research workspace.
# All settings come from WORKSPACE_* environment variables (docs/hub.md); see hub/config.py.
from hub.config import configure
from hub.settings import Settings

settings = Settings.from_env()
configure(c, settings)  # noqa: F821
if settings.extra_config:
    load_subconfig(settings.extra_config)  # noqa: F821
