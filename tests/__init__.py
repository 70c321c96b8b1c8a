"""The test suite. Each folder is a package, so test modules are named by their path
(tests.app.test_request) and two folders may hold files of the same name; helpers shared by
several test files are in tests.support, fixtures in the conftest.py files."""
