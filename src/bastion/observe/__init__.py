"""What bastion tells its operators: the error log and the access log."""
