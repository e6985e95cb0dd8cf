"""HTTP layer: thin handlers, one module per resource; middlewares; the OpenAPI document."""
