"""The REST front end: TF Serving's REST API as an ASGI application on uvicorn."""
