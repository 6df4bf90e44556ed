"""An app that cannot be imported: bastion must stop with this message."""

raise RuntimeError("proc_badimport: DATABASE_URL is not set")
