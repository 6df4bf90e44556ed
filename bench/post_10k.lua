-- Every request is a POST carrying a 10 KiB body (10240 bytes of "x").
wrk.method = "POST"
wrk.body = string.rep("x", 10240)
wrk.headers["Content-Type"] = "application/octet-stream"
