"""A WSGI app that answers with what it was told about the request, as JSON."""

import json


def app(environ, start_response):
    body = json.dumps(
        {
            "app": "wsgi",
            "script_name": environ["SCRIPT_NAME"],
            "path_info": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
