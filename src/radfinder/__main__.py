from radfinder.cli.main import run

run()
