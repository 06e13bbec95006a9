"""admin_cli: ``masante-admin``, the operator's hands. It goes through the same services as the server."""
