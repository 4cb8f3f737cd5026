"""The web layer: FastAPI routers over the store, assembled by `twin.api.app.create_app`."""
