import { main } from './cli/main';
import { runDemo } from './demo';

const argv = process.argv.slice(2);
(argv[0] === 'demo' ? runDemo(argv.slice(1), main) : main(argv)).then((code) => {
  process.exitCode = code;
});
