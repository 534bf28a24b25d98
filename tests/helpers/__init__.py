"""Test infrastructure shared by the test suites: a real mosquitto broker, an asyncio MQTT
client and an EdgeCore emulator. Import as ``helpers.<module>`` (``tests/`` is on ``sys.path``
because ``tests/conftest.py`` lives in a directory without ``__init__.py``)."""
