from openft.cli import main

main()
