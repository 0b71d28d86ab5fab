"""`python -m zfarm.cli`: the farm's processes start their children this way."""

from zfarm.cli.main import main

main()
