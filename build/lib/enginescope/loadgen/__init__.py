"""OpenAI-API client and open-loop load generator, for production endpoints and the simulated fleet alike."""
