from dockvol._cli.main import main

main()
