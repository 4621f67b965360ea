"""Training worker: Celery tasks that train the book's models and publish SavedModels."""
