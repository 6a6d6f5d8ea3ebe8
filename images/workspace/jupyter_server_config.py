# The workspace's Jupyter server settings (installed at <venv>/etc/jupyter/).
c = get_config()  # noqa: F821

# Download paths: 403 handlers shadow /files, /view and nbconvert (loaded before the defaults).
c.ServerApp.extra_services = ["tw_workspace.hardening"]
c.ServerApp.contents_manager_class = "tw_workspace.hardening.GuardedContentsManager"
c.ContentsManager.files_handler_class = "tw_workspace.hardening.ForbiddenHandler"
c.ContentsManager.allow_hidden = False
c.ServerApp.terminals_enabled = False
# Server extensions a workspace does not use (faster start, smaller surface).
c.ServerApp.jpserver_extensions = {
    "jupyter_lsp": False,
    "jupyter_server_terminals": False,
    "notebook_shim": False,
}
c.ServerApp.disable_check_xsrf = False
c.FileContentsManager.delete_to_trash = False
c.ServerApp.root_dir = "/home/researcher"
c.ServerApp.default_url = "/lab"
# Idle kernels are culled inside the server; the hub culls idle servers.
c.MappingKernelManager.cull_idle_timeout = 3600
c.MappingKernelManager.cull_interval = 300
