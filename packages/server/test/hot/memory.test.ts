/** The in-process hot store runs the hot-state contract. */
import { createMemoryHotStore } from '../../src/hot/memory.ts';
import { hotContract } from './contract.ts';

hotContract('in-process', async () => createMemoryHotStore());
