from serray.cli import main

main(prog_name="serray")
