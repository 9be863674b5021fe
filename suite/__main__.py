from suite.cli import app

app()
