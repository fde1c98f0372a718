"""Devin's REST API as this project speaks it: the request and response models, the one HTTP
client, pacing, list lag."""
