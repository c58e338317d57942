"""HTTP and WebSocket edges of the gateway: middlewares, pages, JSON API, the console socket."""
